"""Status vocabulary and helpers: condition types, reasons, metav1.Condition handling, phase."""
