"""One module per security control, each behind the same small protocol (`base.Control`): what it adds
to the desired objects, what must hold before anything is written (`preflight`), and a pure `check` that
judges the live state. `registry.CONTROLS` lists them; judging, preflight, status, docs and metrics
iterate over it."""
