"""A model's life on live traffic: training data read from the input topic (`harvest`)."""
