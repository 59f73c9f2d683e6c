"""The app of a `paste` service that has a `mount` (`mount = PREFIX=<this file>`).

uWSGI's own `paste` option serves a paste-deploy app at the root only, and
its `mount` reads `config:FILE#NAME` as a module name, so a mounted paste
app is loaded here instead, from the URI the launcher puts in
$WSGI_SUPERVISOR_PASTE. Run by path in the service's own Python: it needs
PasteDeploy there, nothing of wsgi-supervisor.
"""

import os

from paste.deploy import loadapp

application = loadapp(os.environ["WSGI_SUPERVISOR_PASTE"])
