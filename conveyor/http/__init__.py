"""conveyor's HTTP API and dashboard (`conveyor serve`; needs `pip install 'conveyor[http]'`).

    api = create_api(app, token=os.environ["CONVEYOR_TOKEN"])   # a Starlette app; serve with uvicorn

Endpoints, error codes and limits: docs/http.md.
"""

from conveyor.http.application import create_api

__all__ = ["create_api"]
