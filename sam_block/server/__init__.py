"""The HTTP server: inference's own app with the plugin, plus the routes the engine cannot serve.

- ``app.py``: builds inference's FastAPI app with the plugin enabled, the command line.
"""
