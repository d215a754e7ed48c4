

def run_stage(fn, *args, **kwargs) -> int:
    """Run a stage's entry point for a command line: the errors that name their file, URI or
    parameter print as `error: ...` and exit 2 (no traceback); anything else is a bug and raises.
    The `perceptual` loggers are set up here (log.setup: INFO on stderr, or the CLI's -v/-q level)."""
    from .log import get, setup

    setup()
    try:
        fn(*args, **kwargs)
    except (FileNotFoundError, ValueError, KeyError) as e:
        get(__name__).error(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}")
        return 2
    return 0
