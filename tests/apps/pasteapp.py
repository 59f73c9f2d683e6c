"""Test app built by paste-deploy (`pasteapp.ini`): an app factory and a filter factory.

The app answers with its greeting (from the ini section that built it),
the ini file paste-deploy read, and how the request reached it.
"""

import json
import sys


def app_factory(global_config, **local_conf):
    greeting = local_conf.get("greeting", "hello")

    def application(environ, start_response):
        answer = {
            "greeting": greeting,
            "ini": global_config.get("__file__"),
            "filtered": environ.get("pasteapp.filtered", False),
            "script_name": environ.get("SCRIPT_NAME", ""),
            "path_info": environ.get("PATH_INFO", ""),
            "argv": sys.argv,
        }
        data = json.dumps(answer).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    return application


def filter_factory(global_config, **local_conf):
    def wrap(app):
        def filtered(environ, start_response):
            environ["pasteapp.filtered"] = True
            return app(environ, start_response)

        return filtered

    return wrap
