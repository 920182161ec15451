"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis over
hypothesis): valid and invalid requests for every operation; none may get a 5xx, and every
4xx has the one error shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from recpipe.serving.app import create_app
from recpipe.serving.settings import Settings
from tests.serving_helpers import copy_bundle, tiny_bundle

pytestmark = pytest.mark.e2e

EXAMPLES = {"/admin/reload": 3}  # each reload loads the bundle again: a few are enough
DEFAULT_EXAMPLES = 25


def test_no_request_gets_a_server_error(serving_repo: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle(serving_repo), tmp_path / "bundle")
    app = create_app(
        Settings(
            bundle=bundle,
            landing=tmp_path / "landing",
            deletions=tmp_path / "deletions.jsonl",
            reload_interval=0,
            warm=False,
            api_key="k",
        )
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 11
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES.get(operation.path, DEFAULT_EXAMPLES),
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def check(case) -> None:
                headers = {"X-API-Key": "k"} if case.headers is None else None
                response = case.call(headers=headers)
                where = f"{case.method} {case.formatted_path} {case.query} {case.body!r}"
                assert response.status_code < 500, f"{where} -> {response.text[:500]}"
                if response.status_code >= 400:
                    error = response.json()["error"]
                    assert error["status"] == response.status_code and error["message"]

            try:
                check()
            except Unsatisfiable:
                # an operation without parameters or body has no invalid request to make
                assert mode is GenerationMode.NEGATIVE, operation.path
