"""Flask helpers shared by the two HTTP front doors, the web pages (``portal.web``) and the JSON
API (``portal.api``), so neither imports the other: bounded request parameters (``params``) and
the request's services, read session and acting user (``context``)."""
