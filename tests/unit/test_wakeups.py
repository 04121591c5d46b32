"""Which SMDs a change of a Namespace or StorageClass wakes, read from stored specs that may not match
the API at all (an SMD stored while the CRD did not validate it): never an exception."""

from __future__ import annotations

from typing import Any

import pytest

from securemodels.handlers.runtime import _client_namespaces, _storage_class


@pytest.mark.parametrize(
    "spec",
    ["a string", {"mtls": "off"}, {"mtls": {"clients": "all"}}, {"storage": ["x"]}, None, 7],
)
def test_a_spec_of_the_wrong_shape_refers_to_nothing(spec: Any) -> None:
    assert _client_namespaces({"spec": spec}) == set()
    assert _storage_class({"spec": spec}) is None


def test_a_valid_spec_names_its_client_namespaces_and_storage_class() -> None:
    body = {
        "spec": {
            "mtls": {"clients": [{"name": "gw", "namespace": "ml-gw"}, "junk"]},
            "storage": {"storageClassName": "encrypted"},
        }
    }

    assert _client_namespaces(body) == {"ml-gw"}
    assert _storage_class(body) == "encrypted"
