"""A case from a user's model file (``vilab compare FILE.py``)."""

from inference.lab.cases.base import Case
from inference.lab.catalog import METHODS


class CaseFileError(ValueError):
    """A model file that cannot be a case: missing, unimportable, or lacking model/data."""


def case_from_file(path) -> Case:
    """A case from a user's model file (``vilab compare FILE.py``).

    The file defines ``model`` and ``data()`` (returning the model's positional
    arguments, a tuple or a single value), and optionally ``guide`` (method
    ``svi-guide``), ``reference`` (a table indexed by parameter label with ``mean`` and
    ``sd``, or ``{label: (mean, sd)}``) and ``log_evidence`` (nats). The case is named
    after the file; its description is the first line of the file's docstring.
    """
    import importlib.util
    from pathlib import Path

    from inference.tables import reference_frame

    path = Path(path)
    if not path.is_file():
        raise CaseFileError(f"no model file {str(path)!r}")
    spec = importlib.util.spec_from_file_location(f"vilab_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise CaseFileError(f"{path} cannot be imported: {type(err).__name__}: {err}") from None
    missing = [name for name in ("model", "data") if not callable(getattr(module, name, None))]
    if missing:
        raise CaseFileError(
            f"{path} defines no {' and no '.join(missing)}(): a model file needs "
            "a Pyro `model` and a `data()` returning its arguments"
        )
    try:
        args = module.data()
    except Exception as err:
        raise CaseFileError(f"{path}: data() failed: {type(err).__name__}: {err}") from None
    args = args if isinstance(args, tuple) else (args,)
    guide = getattr(module, "guide", None)
    reference = getattr(module, "reference", None)
    try:
        reference = reference_frame(reference) if reference is not None else None
    except (TypeError, ValueError) as err:
        raise CaseFileError(f"{path}: reference is not a table of mean and sd: {err}") from None
    doc = (module.__doc__ or "").strip().splitlines()
    methods = tuple(m for m in METHODS if m != "svi-guide" or callable(guide))
    return Case(
        name=path.stem,
        description=doc[0] if doc else f"the model in {path}",
        model=module.model,
        args=args,
        guide=guide if callable(guide) else None,
        reference=reference,
        log_evidence=getattr(module, "log_evidence", None),
        methods=methods,
    )
