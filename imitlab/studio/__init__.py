"""``imitlab studio``: a local web app to teleoperate tasks, review and curate datasets, and compare runs."""
