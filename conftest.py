# Plugin glue only: the options, fixtures and report hooks live in vfio_certify/plugin.py.
pytest_plugins = ["vfio_certify.plugin"]
