from .cli import main

if __name__ == "__main__":  # not when a worker process imports it
    raise SystemExit(main(prog_name="digest"))  # its usage lines, its completion variable
