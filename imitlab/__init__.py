"""imitlab: expert demos to validated, deployable policies in MuJoCo."""
