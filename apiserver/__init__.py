"""shoal's API server: the object model, the revision-log store, the HTTP app and the client.

Tour: `resources` names the types; `models` validates and defaults them;
`store` keeps them in one revision log on SQLAlchemy; `app` serves them with
Kubernetes' paths and semantics; `client` is how every other component talks
to it. Nothing outside this package touches the database.
"""
