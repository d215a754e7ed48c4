

def run_stage(fn, *args, **kwargs) -> int:
    """Run a stage's entry point for a command line: the errors that name their file, URI or
    parameter print as `error: ...` and exit 2 (no traceback); anything else is a bug and raises."""
    import sys

    try:
        fn(*args, **kwargs)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    return 0
