"""uWSGI integration, installed by the app's ``ready()`` when running inside uWSGI.

uWSGI forks its workers from C: Python's ``os.register_at_fork`` hooks run there only with
``--py-call-osafterfork``. Without it, pools would learn of the fork only on their next slow
path, so this module registers a post-fork hook (through ``uwsgidecorators.postfork`` when it
is importable, else ``uwsgi.post_fork_hook``) and a worker-exit hook (``uwsgi.atexit``).
With ``lazy-apps = true`` the application is loaded after the fork and nothing is inherited.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pooled_clients import fork

__all__ = ["install", "post_fork"]

_installed = False


def post_fork() -> None:
    """In a new uWSGI worker: pools start afresh, inherited clients are abandoned; with
    ``POOLED_CLIENTS_WARM_UP`` each pool's MIN_SIZE clients start opening."""
    fork.run_child_callbacks()
    from pooled_clients import lifecycle

    lifecycle.warm_up()


def install(on_exit: Callable[[], None]) -> bool:
    """Register the hooks when running under uWSGI (once): :func:`post_fork` after each
    fork and ``on_exit`` when a worker exits. False elsewhere."""
    global _installed
    try:
        import uwsgi  # exists only inside uWSGI
    except ImportError:
        return False
    if _installed:
        return True
    _installed = True
    try:
        from uwsgidecorators import postfork
    except ImportError:
        _chain(uwsgi, "post_fork_hook", post_fork)
    else:
        postfork(post_fork)
    _chain(uwsgi, "atexit", on_exit)
    return True


def _chain(module: Any, name: str, hook: Any) -> None:
    """Set ``module.name`` to ``hook``, calling whatever was there first."""
    previous = getattr(module, name, None)
    if previous is None:
        setattr(module, name, hook)
        return

    def chained() -> None:
        previous()
        hook()

    setattr(module, name, chained)
