"""wsgi-supervisor: one daemon per host for OpenStack-style APIs and workers."""

__version__ = "0.1.0"
