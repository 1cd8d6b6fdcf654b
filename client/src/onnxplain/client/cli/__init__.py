"""The `onnxplain` command line: client commands built in, server commands added by plugins (see plugins.py)."""
