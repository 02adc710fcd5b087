"""``python -m skyrig.pvesim serve ...``"""

from skyrig.pvesim.cli import app

if __name__ == "__main__":
    app(prog_name="python -m skyrig.pvesim")
