"""Connection URIs with the password hidden, for what clfops prints, logs and stores.

SQLAlchemy URLs (an Optuna storage, `clfops server`'s backend store, a database tracking store) are rendered
by SQLAlchemy with the password as ***; http(s)://, file: URIs and plain paths pass unchanged. Sweeps store
the redacted tracking URI in their study, so the rendering must stay stable across versions of clfops.
"""

from __future__ import annotations


def redact_uri(uri: str) -> str:
    if "://" not in uri or uri.startswith(("http://", "https://", "file:")):
        return uri
    from sqlalchemy.engine import make_url

    return make_url(uri).render_as_string(hide_password=True)
