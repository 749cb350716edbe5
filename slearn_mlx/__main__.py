"""`python -m slearn_mlx` and the `slearn-mlx` command: the BLAS is set up before the commands import mlx."""

from .blas import setup


def main():
    setup()
    from .cli import main as run_command

    run_command()


if __name__ == "__main__":
    main()
