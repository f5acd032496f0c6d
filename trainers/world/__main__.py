"""`python -m trainers.world [--seed N] [--root DIR]`: build (or reuse) the embedded world and print its stats."""

from trainers.world.build import main

main()
