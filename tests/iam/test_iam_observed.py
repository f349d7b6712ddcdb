"""IAM proven against observed calls: what each function's code called vs. template.yaml.

Runs after every other test of the session (``after_suites`` marker, ordered by
tests/conftest.py): the http, reliability and component suites record every AWS call each
function makes (``devstack.aws_calls``) into ``$QBO_AWS_CALL_LOG_DIR``; this module reads those
records and checks

1. every recorded call against the function's statements in template.yaml (SAM policy templates
   expanded), the key policy of a template KMS key, and the implicit KMS use of a table or secret
   kept on a customer managed key: a call real AWS would refuse fails the test;
2. the converse: every action granted to a function was exercised by some test, or is listed in
   :data:`UNEXERCISED_GRANTS` with the reason it is still needed.

Run alone (``pytest tests/iam``) there is nothing to check: the test skips, except with
``CI=true``, where a missing record fails the run. With parallel workers (``make test``), the
suites run first with ``-m "not after_suites"`` and this module runs next in its own session
over the same ``$QBO_AWS_CALL_LOG_DIR``: tests/conftest.py notes there which tests each session
ran, so the converse still knows whether every producer suite ran whole.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from devstack.aws_calls import ENV_VAR
from devstack.template import load_template
from tests.iam import policy

pytestmark = pytest.mark.after_suites

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Suites whose functions' calls are recorded; the converse check needs all of them to have run.
PRODUCERS = ("tests/http", "tests/reliability", "tests/component")

#: Grants no test exercises, each with the reason it stays. (An entry whose grant a run happens
#: to exercise, e.g. after a cache expired, is not an error: these are the local stack's blind
#: spots, not exemptions from the forward check.)
#: Key: (function, action pattern, statement: "<Resource>.KeyPolicy.<Sid>" or its source).
_SHARED_SECRET_CACHE = (
    "The local stack runs every function in one process: the callback always finds the client "
    "secret /connect read moments before in Powertools' cache, so its own read never happens "
    "there; a callback container in Lambda reads the secret to exchange the code."
)
_PROXY_SHARES_THE_VAULT = (
    "QuickBooksApiFunction reads tokens through the same vault wiring as GetTokenFunction; the "
    "local stack runs every function in one process, so the client secret (Powertools' cache) "
    "and the unwrapped data keys (the cipher's cache) that another function loaded moments "
    "before are found there and never read again. In Lambda, the proxy's own container reads "
    "the secret to refresh after a 401 and unwraps the data key to open the token."
)
UNEXERCISED_GRANTS: dict[tuple[str, str, str], str] = {
    (
        "QuickBooksApiFunction",
        "secretsmanager:GetSecretValue",
        "QuickBooksApiFunction.Policies[0].Statement[1]",
    ): _PROXY_SHARES_THE_VAULT,
    (
        "QuickBooksApiFunction",
        "kms:Decrypt",
        "QuickBooksApiFunction.Policies[0].Statement[2]",
    ): _PROXY_SHARES_THE_VAULT,
    ("QuickBooksApiFunction", "dynamodb:Query", "QuickBooksApiFunction.Policies[0].Statement[0]"): (
        "The budget guard reads the tenants' CorePlus quotas (a Query of the usage partition) "
        "only for production calls; the local stack talks to the sandbox simulator, whose calls "
        "Intuit does not meter, so the guard admits them without reading."
    ),
    ("QuickBooksApiFunction", "kms:Decrypt", "TokenKey.KeyPolicy.OpenTokens"): (
        _PROXY_SHARES_THE_VAULT
    ),
    (
        "QuickBooksApiFunction",
        "events:PutEvents",
        "QuickBooksApiFunction.Policies[0].Statement[3]",
    ): (
        "A refresh the proxy forces after a 401 publishes a lifecycle event only when it settles "
        "a connection's fate (needs_reauthorization after the invalid_grant window), which no "
        "proxy test reaches yet; GetTokenFunction's identical grant is exercised."
    ),
    (
        "RefreshWorkerFunction",
        "dynamodb:Query",
        "RefreshWorkerFunction.Policies[0].Statement[0]",
    ): (
        "The budget guard reads the tenants' CorePlus quotas (a Query of the usage partition) "
        "before a production reconciliation's CDC call, and keeps them 30 s per container. The "
        "local stack runs every function in one process with one guard, so the run-now "
        "reconciliations of ConnectionsFunction read them first and the worker's scheduled run "
        "finds them cached; a worker container in Lambda has a guard of its own and reads them."
    ),
    (
        "CallbackFunction",
        "secretsmanager:GetSecretValue",
        "CallbackFunction.Policies[0].Statement[1]",
    ): (_SHARED_SECRET_CACHE),
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


#: The mark expression CI's parallel run uses to leave this module to a session of its own.
WITHOUT_AFTER_SUITES = "not after_suites"


def _session_note(session: pytest.Session) -> dict[str, Any]:
    """This session's tests and filters, in the shape tests/conftest.py writes beside records."""
    option = session.config.option
    return {
        "paths": [str(Path(item.path).resolve()) for item in session.items],
        "args": [str(Path(a.split("::", 1)[0]).resolve()) for a in session.config.args],
        "keyword": getattr(option, "keyword", "") or "",
        "markexpr": getattr(option, "markexpr", "") or "",
    }


def _earlier_notes(directory: Path | None) -> list[dict[str, Any]]:
    """The notes of the sessions that wrote into the same record directory (CI's first run)."""
    if directory is None or not directory.is_dir():
        return []
    return [json.loads(p.read_text(encoding="utf-8")) for p in directory.glob("session-*.json")]


def _producers_ran(notes: list[dict[str, Any]]) -> tuple[bool, bool]:
    """(some producer test ran, every producer suite ran unfiltered in some session)."""
    dirs = [str(REPO_ROOT / p) for p in PRODUCERS]

    def ran(note: dict[str, Any], d: str) -> bool:
        return any(p.startswith(d + os.sep) for p in note["paths"])

    def whole(note: dict[str, Any], d: str) -> bool:
        filtered = note["keyword"] or note["markexpr"] not in ("", WITHOUT_AFTER_SUITES)
        covered = any(a == d or d.startswith(a + os.sep) for a in note["args"])
        return ran(note, d) and covered and not filtered

    some = any(ran(note, d) for note in notes for d in dirs)
    return some, all(any(whole(note, d) for note in notes) for d in dirs)


def _load_records(directory: Path) -> tuple[dict[str, dict[str, str]], list[dict[str, Any]]]:
    bindings: dict[str, dict[str, str]] = {}
    calls: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in sorted(directory.glob("calls-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            if "binding" in entry and "env" in entry:
                bindings[entry["binding"]] = entry["env"]
            elif entry.get("call"):
                calls.append(entry)
            elif "error" in entry:
                errors.append(f"{path.name}: {entry['error']}")
    assert not errors, "the call recorder failed:\n" + "\n".join(errors)
    return bindings, calls


@pytest.fixture(scope="module")
def observed(request: pytest.FixtureRequest) -> dict[str, Any]:
    directory = os.environ.get(ENV_VAR)
    records = Path(directory) if directory else None
    _, all_ran = _producers_ran([_session_note(request.session), *_earlier_notes(records)])
    bindings, calls = _load_records(records) if records and records.is_dir() else ({}, [])
    if not calls:
        message = (
            "no AWS calls were recorded: the IAM test needs the http and reliability "
            f"suites in the same session (records go to ${ENV_VAR})"
        )
        if all_ran or _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    template = load_template(REPO_ROOT / "template.yaml")
    verdicts: list[policy.Verdict] = []
    cache: dict[str, policy.Binding] = {}
    seen: set[policy.Requirement] = set()
    for call in calls:
        binding = cache.get(call["binding"])
        if binding is None:
            binding = cache[call["binding"]] = policy.Binding(template, bindings[call["binding"]])
        for requirement in policy.requirements_of(call, template, binding):
            if requirement in seen:
                continue
            seen.add(requirement)
            verdicts.append(policy.check(requirement, template, binding))
    return {"template": template, "verdicts": verdicts, "complete": all_ran, "calls": calls}


def test_every_recorded_call_is_allowed_by_template(observed: dict[str, Any]) -> None:
    # Given every AWS call the functions made while the suites ran
    template = observed["template"]
    unknown = sorted({c["function"] for c in observed["calls"]} - set(policy.functions(template)))
    # Then each one comes from a function of the template
    assert not unknown, f"calls recorded for functions template.yaml does not declare: {unknown}"
    # And real AWS would allow each one
    refused: dict[str, list[dict[str, str]]] = defaultdict(list)
    for v in observed["verdicts"]:
        if v.allowed:
            continue
        r = v.requirement
        via = f" (implicitly, through {r.via})" if r.via else ""
        refused[f"{r.function} needs {r.action} on {r.resource}{via}: {v.reason}"].append(
            dict(r.encryption_context)
        )
    lines = [
        message + (f" [{len(contexts)} calls, e.g. context {contexts[0]}]" if contexts[0] else "")
        for message, contexts in sorted(refused.items())
    ]
    assert not lines, "template.yaml does not allow calls the code makes:\n" + "\n".join(lines)


def test_every_granted_action_is_exercised_or_explained(observed: dict[str, Any]) -> None:
    if not observed["complete"]:
        message = "the converse needs the whole http, reliability and component suites"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    # Given the grants of every function in template.yaml
    template = observed["template"]
    unused: dict[str, list[str]] = defaultdict(list)
    for function in policy.functions(template):
        for grant in policy.grants(template, function):
            used = policy.exercised_by(grant, observed["verdicts"])
            reason = UNEXERCISED_GRANTS.get((function, grant.action, grant.statement.source))
            # Then each one was exercised by some test, or is listed with its reason
            if not used and reason is None:
                unused[function].append(grant.label())
    assert not unused, (
        "granted but never used by any test (remove it, or list it with a reason):\n"
        + "\n".join(line for lines in unused.values() for line in lines)
    )
