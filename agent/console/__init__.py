"""The web console, served by the daemon under /ui: incidents, runs and approvals in a browser.

Server-rendered (jinja2, every value escaped; nothing from an alert is ever rendered as a template),
every asset in the package (no CDN), every action a plain form (it works without JavaScript: the
console sends none). Sign-in takes a decision credential, never the intake token; actions are the
API's own, audited as the signed-in person."""

from agent.console.routes import mount

__all__ = ["mount"]
