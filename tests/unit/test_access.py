"""The authorizer's answers about a model's account: one review per probe, the baseline account asked
only about what the model may do, answers kept until a change could make them wrong."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from securemodels.desired import permissions
from securemodels.desired.model import Permissions
from securemodels.k8s.access import AccessReviews
from securemodels.k8s.client import Kube

SECRETS = permissions.Probe("get", "", "secrets").describe()
CONFIG_MAPS = permissions.Probe("get", "", "configmaps").describe()


class Authorizer:
    """Answers SubjectAccessReviews from a table of (user, probe description) that are allowed."""

    def __init__(self, allowed: set[tuple[str, str]]) -> None:
        self.allowed = allowed
        self.asked: list[tuple[str, str]] = []
        self.gate = asyncio.Event()  # answers travel back once it is set
        self.gate.set()

    async def review(self, body: Mapping[str, Any]) -> bool:
        spec = body["spec"]
        attributes = spec["resourceAttributes"]
        probe = permissions.Probe(
            attributes["verb"],
            attributes["group"],
            attributes["resource"],
            attributes.get("subresource", ""),
            cluster_wide="namespace" not in attributes,
        )
        question = (spec["user"], probe.describe())
        self.asked.append(question)
        answer = question in self.allowed
        await self.gate.wait()
        return answer


MODEL = permissions.user_of("ml", "fraud")
BASELINE = permissions.user_of("ml", permissions.BASELINE_ACCOUNT)


def reviews(authorizer: Authorizer) -> AccessReviews:
    return AccessReviews(cast(Kube, authorizer))


async def test_an_account_with_no_grants_is_asked_every_probe_and_nothing_else() -> None:
    authorizer = Authorizer(set())

    found = await reviews(authorizer).of("ml", "fraud")

    assert found == Permissions()
    assert sorted(authorizer.asked) == sorted((MODEL, probe.describe()) for probe in permissions.PROBES)


async def test_the_baseline_is_asked_only_about_what_the_model_may_do() -> None:
    authorizer = Authorizer({(MODEL, SECRETS), (MODEL, CONFIG_MAPS), (BASELINE, CONFIG_MAPS)})

    found = await reviews(authorizer).of("ml", "fraud")

    assert set(found.allowed) == {SECRETS, CONFIG_MAPS}
    assert found.everyone == (CONFIG_MAPS,)
    assert sorted(question for question in authorizer.asked if question[0] == BASELINE) == sorted(
        [(BASELINE, SECRETS), (BASELINE, CONFIG_MAPS)]
    )


async def test_answers_are_kept_until_forgotten() -> None:
    authorizer = Authorizer({(MODEL, SECRETS)})
    asked = reviews(authorizer)

    first = await asked.of("ml", "fraud")
    count = len(authorizer.asked)
    again = await asked.of("ml", "fraud")

    assert first == again
    assert len(authorizer.asked) == count


async def test_forget_drops_only_what_a_change_could_affect() -> None:
    authorizer = Authorizer(set())
    asked = reviews(authorizer)
    for namespace, account in (("ml", "fraud"), ("ml", "other"), ("ops", "fraud")):
        await asked.of(namespace, account)

    asked.forget("ml", "fraud")
    before = len(authorizer.asked)
    await asked.of("ml", "other")
    await asked.of("ops", "fraud")
    assert len(authorizer.asked) == before
    await asked.of("ml", "fraud")
    assert len(authorizer.asked) > before

    asked.forget("ml")
    before = len(authorizer.asked)
    await asked.of("ops", "fraud")
    assert len(authorizer.asked) == before
    await asked.of("ml", "other")
    assert len(authorizer.asked) > before

    asked.forget()
    before = len(authorizer.asked)
    await asked.of("ops", "fraud")
    assert len(authorizer.asked) > before


async def test_answers_asked_across_a_forget_are_not_kept() -> None:
    authorizer = Authorizer({(MODEL, SECRETS)})
    authorizer.gate.clear()
    asked = reviews(authorizer)
    asking = asyncio.create_task(asked.of("ml", "fraud"))
    while (MODEL, SECRETS) not in authorizer.asked:
        await asyncio.sleep(0)
    asked.forget("ml", "fraud")  # a binding changed while the answers were on their way
    authorizer.allowed = set()
    authorizer.gate.set()

    stale = await asking
    fresh = await asked.of("ml", "fraud")

    assert stale.allowed == (SECRETS,)
    assert fresh == Permissions()
