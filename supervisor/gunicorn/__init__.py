"""Everything wsgi-supervisor knows about gunicorn: its settings, its boot, its driver."""
