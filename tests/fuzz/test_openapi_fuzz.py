"""auth's and collect's OpenAPI documents are accurate: schemathesis, fed each live
/openapi.json, finds no 5xx and no response the document does not declare.

The CI budget is small and fixed: each phase once, ``MAX_EXAMPLES`` per operation, one
seed; about 20 s for both services. ``python bench/fuzz.py`` is the long run.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis

from tests.fuzz.conftest import REPORTS
from tests.support.openapi_fuzz import Target, fuzz

MAX_EXAMPLES = 30
SEED = 20240601


@pytest.mark.parametrize("service", ["auth", "collect"])
def test_openapi_fuzz(service: str, fuzz_targets: dict[str, Target]) -> None:
    report = fuzz(fuzz_targets[service], max_examples=MAX_EXAMPLES, seed=SEED)
    REPORTS.append(report)
    print(f"schemathesis {schemathesis.__version__} {service}: {report.summary()}")
    problems = "\n".join(report.failures + report.errors)
    assert not problems, f"{len(report.failures)} failures, {len(report.errors)} errors:\n{problems}"
    assert report.operations >= 10 and report.cases >= 20 * report.operations, report.summary()
    # The run reached past the credential checks: the handlers themselves answered.
    assert report.statuses["200"] + report.statuses["201"] + report.statuses["202"] > report.cases // 10


def test_each_operation_declares_its_credential(fuzz_targets: dict[str, Target]) -> None:
    """Operator, service and app credentials are separate bearer schemes in the documents, so
    clients (and the fuzzer) can tell which token an operation takes."""
    wanted = {
        ("auth", "post", "/v1/apps"): "OperatorToken",
        ("auth", "post", "/v1/apps/{app_id}/keys"): "OperatorToken",
        ("auth", "patch", "/v1/apps/{app_id}"): "OperatorToken",
        ("auth", "post", "/v1/introspect"): "ServiceToken",
        ("auth", "post", "/v1/tokens"): "HTTPBearer",
        ("collect", "post", "/v1/messages"): "HTTPBearer",
        ("collect", "get", "/v1/online"): "HTTPBearer",
    }
    documents = {name: httpx.get(f"{t.base_url}/openapi.json", timeout=10).json() for name, t in fuzz_targets.items()}
    for (service, method, path), scheme in wanted.items():
        document = documents[service]
        assert document["components"]["securitySchemes"][scheme]["scheme"] == "bearer"
        assert document["paths"][path][method]["security"] == [{scheme: []}], (service, method, path)
