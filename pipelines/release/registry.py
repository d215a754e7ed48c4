"""`release register`: each shipped model as a registry version @champion, once per file (found again
by its tag), so `promote` judges `dvc repro`'s quick challenger against the release."""
from __future__ import annotations

import json

from .. import config
from ..log import get
from .params import settings

RELEASE_TAG = "release.sha256"


def register() -> list[dict]:
    """Each shipped model as a registry version @champion, once per file (found again by its tag)."""
    from perceptual_core import zoo

    from .. import tracking

    done = []
    client = tracking._client()
    for e in zoo.entries(config.resolve(settings().models_dir)):
        existing = [v for v in client.search_model_versions(f"name='{e.name}'")
                    if v.tags.get(RELEASE_TAG) == e.sha256]
        if existing:
            mv = existing[0]
            state = "already registered"
        else:
            model = zoo.load(e.name, folder=e.file.parent)
            mv = tracking.register_release(e.name, model, tags={RELEASE_TAG: e.sha256, "release": "true"})
            state = "registered"
        rm = client.get_registered_model(e.name)
        if "champion" not in rm.aliases:
            tracking.set_alias(e.name, "champion", mv.version)
        done.append({"model": e.name, "version": str(mv.version), "state": state,
                     "champion": str(client.get_registered_model(e.name).aliases.get("champion"))})
        get(__name__).info(f"release: {e.name} v{mv.version} {state}; champion v{done[-1]['champion']}")
    out = config.resolve(settings().registered)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([{k: v for k, v in d.items() if k != "state"} for d in done], indent=1) + "\n")
    return done
