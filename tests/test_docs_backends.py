"""docs/backends.md's complete minimal backend runs as a script and prints what the page shows."""
import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "backends.md"


def test_the_minimal_backend_of_the_docs_runs_pgd_fosc_and_adversarial_training(run_documented_code):
    run_documented_code(DOC.read_text(), "## A complete minimal backend", "It prints")


def test_the_minimal_backend_writes_the_algorithms_three_methods_and_two_constructors():
    """Its class, run alone: the public methods it writes are the protocol's ModelOps (what the
    algorithm calls on a model) and make_model / make_optimizer; everything else is a default."""
    from minidyn.backend import ModelOps
    part = DOC.read_text().split("## A complete minimal backend", 1)[1]
    code = re.search(r"```python\n(.*?)```", part, re.S).group(1)
    namespace = {}
    exec(code.split("\n\n\nbackend = ")[0], namespace)  # the imports and the class, not the demo
    written = {k for k, v in vars(namespace["SoftmaxBackend"]).items() if callable(v) and not k.startswith("_")}
    model_ops = {k for k in vars(ModelOps) if not k.startswith("_")}
    assert written == model_ops | {"make_model", "make_optimizer"}
    assert len(written) == 5
