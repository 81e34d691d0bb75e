"""``embedrec serve``: the HTTP service (FastAPI on uvicorn) over a saved model."""

from embedrec.serving.state import Settings


def create_app(settings: Settings):  # noqa: ANN201 - FastAPI, imported lazily
    """The FastAPI application for ``settings`` (imports FastAPI only when called)."""
    from embedrec.serving.app import create_app as create

    return create(settings)


__all__ = ["Settings", "create_app"]
