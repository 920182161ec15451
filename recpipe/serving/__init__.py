"""Serving what the pipeline learned: the bundle (``bundle``, ``online``), the service's
business logic (``service``), its shared state (``store``), durable event log and deletion
list (``events``), settings (``settings``) and the FastAPI app (``app``, ``recpipe serve``).
"""
