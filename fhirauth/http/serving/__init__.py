"""The only code that touches Starlette's and uvicorn's internals; INTERNALS.md names each one."""
