"""imitlab.deploy: ONNX export, the deployment gate, a torch-free runtime and the policy server."""
