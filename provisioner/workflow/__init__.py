"""Reading a ComfyUI workflow: which nodes it uses and who provides them, which model files it loads, and
what a manifest needs to run it (`provision workflow analyze/import`)."""
