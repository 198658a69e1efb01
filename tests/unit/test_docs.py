"""docs/topology.md documents every field of the topology file."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from lvscluster.model import topology

DOC = (Path(__file__).parent.parent.parent / "docs" / "topology.md").read_text()


def test_every_field_is_documented() -> None:
    models = [m for m in vars(topology).values()
              if isinstance(m, type) and issubclass(m, BaseModel) and m is not topology.Strict and m.__module__ == topology.__name__]
    missing = [f"{model.__name__}.{name}" for model in models for name in model.model_fields
               if not re.search(rf"`{re.escape(name)}`", DOC)]
    assert missing == []
