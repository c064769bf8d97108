"""``graft explain FILE``: where did these weights come from?"""

from __future__ import annotations

import click

from .common import console, handle_errors, json_option, print_json


@click.command("explain")
@click.argument("subject")
@click.option("--candidate", "-c", "candidates", multiple=True, metavar="FILE",
              help="A checkpoint the weights may have come from (searched by content). "
                   "Repeatable.")
@click.option("--init", "init", default=None, metavar="FILE",
              help="A snapshot taken at initialisation: tensors still equal to it are flagged.")
@click.option("--key", "keys", multiple=True, metavar="GLOB", help="Only tensors matching. Repeatable.")
@json_option
@handle_errors
def explain(subject: str, candidates: tuple[str, ...], init: str | None, keys: tuple[str, ...],
            as_json: bool) -> None:
    """Say, for each tensor of SUBJECT (a checkpoint file), where it came from: its
    provenance record (safetensors metadata or SUBJECT.provenance.json) when there is one,
    else a content match in the --candidate files under the known layout transforms; flags
    tensors that look freshly initialised.

    \b
    Example:
      graft explain mnist.pt
      graft explain finetuned.pt -c imagenet_keras.h5 --init init.pt --json
    """
    import fnmatch

    from ..provenance import Explanation
    from ..provenance import explain as run
    from ..report.explain_view import explain_json, explain_table

    ex = run(subject, candidates=list(candidates), init=init)
    if keys:
        ex = Explanation(ex.subject, tuple(o for o in ex.origins
                                           if any(fnmatch.fnmatchcase(o.key, k) for k in keys)),
                         ex.record_found, ex.candidates)
    if as_json:
        print_json(explain_json(ex))
        return
    out = console()
    out.print(explain_table(ex))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(ex.counts().items()))
    out.print(f"{len(ex.origins)} tensors: {counts}"
              + ("" if ex.record_found else " (no provenance record found)"), markup=False)
