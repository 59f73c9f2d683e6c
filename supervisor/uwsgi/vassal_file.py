"""The file every vassal's uWSGI loads as its `wsgi-file`: vassal_app.py, taken from its bytecode.

uWSGI compiles a wsgi-file from source at every start and keeps no
bytecode, and vassal_app.py is long enough for that to cost each vassal
start about 2 ms here. Loaded through the import system instead, it comes
from __pycache__ as any module does; only these few lines are compiled.

Runs in the service's own Python: keep it to the standard library.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "wsgi_supervisor_vassal_app", os.path.join(os.path.dirname(os.path.realpath(__file__)), "vassal_app.py")
)
_vassal_app = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_vassal_app)
application = getattr(_vassal_app, "application", None)  # None outside uWSGI (the daemon's own tests)
