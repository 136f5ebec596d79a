"""The retraining entry point run by the operator's retraining Job: fine-tune, evaluate against the serving
model, optimize, and write a new model version (with its digest and reference profile) to the model store.
"""
