"""The dashboard: server-rendered pages of every queue, each queue's charts and messages, its dead
letters with their errors, topics, and the operator's actions (pause, resume, purge, replay).

views.py holds the routes, pages.py the HTML, charts.py the SVG, style.py the stylesheet and the
Content-Security-Policy. The figures come from conveyor.admin.QueueHistory, sampled in the
background by the API's lifespan.
"""

from conveyor.http.dashboard.views import Dashboard

__all__ = ["Dashboard"]
