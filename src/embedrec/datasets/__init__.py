"""Built-in synthetic data sets; ``generate_cars`` writes the German used-car marketplace."""

from embedrec.datasets.cars import SIZES, generate_cars

__all__ = ["SIZES", "generate_cars"]
