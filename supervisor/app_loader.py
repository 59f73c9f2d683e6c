"""Import a service's WSGI callable: a module, a Python file or a paste-deploy URI.

Shared by every server's entry point (uWSGI's vassal_app.py, gunicorn's
boot.py), each of which loads this file by its path.

Runs in the service's own Python: keep it to the standard library.
"""

import importlib
import importlib.machinery
import importlib.util
import os
import sys


def load(target):
    """The WSGI callable of `package.module[:callable]`, of a Python file (its `application`),
    or of a paste-deploy URI (`config:FILE[#NAME]`, with PasteDeploy in the service's venv)."""
    if target.startswith("config:"):
        from paste.deploy import loadapp

        return loadapp(target)
    if target.endswith(".py") or "/" in target:
        path = os.path.abspath(target)
        # a name of the kind uWSGI gives a wsgi-file; files without .py (old pbr scripts) load too
        name = "uwsgi_file_" + "".join(c if c.isalnum() else "_" for c in path)
        loader = importlib.machinery.SourceFileLoader(name, path)
        spec = importlib.util.spec_from_loader(name, loader, origin=path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        attribute = "application"
    else:
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(module_name)
        attribute = attribute or "application"
    app = module
    for part in attribute.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise AttributeError(f"{target} has no WSGI callable {attribute!r}") from None
    if not callable(app):
        raise TypeError(f"{target}: {attribute!r} is not callable (a {type(app).__name__})")
    return app
