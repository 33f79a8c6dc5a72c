"""Qt front end: widgets and the worker that runs the model off the GUI thread."""
