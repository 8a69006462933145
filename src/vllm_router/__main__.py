"""`python -m vllm_router` runs the command line."""

from vllm_router.cli import main

if __name__ == "__main__":
    main()
