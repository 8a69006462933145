"""vllm-router: one fast entry point in front of a fleet of vLLM servers.

The hot path lives in the compiled module :mod:`vllm_router._core`; this package holds the
command line, logging, the dashboard and the Python extension points.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("vllm-router")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from vllm_router.callbacks import CustomCallbackHandler, Request, Response  # noqa: E402

__all__ = ["CustomCallbackHandler", "Request", "Response", "__version__"]
