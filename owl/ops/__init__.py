"""Small pure array operations shared by inference, training and evaluation."""
