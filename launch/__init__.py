"""kvbench's launcher: compose the Hydra matrix, plan cells, submit them through submitit."""
