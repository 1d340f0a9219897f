"""Test support that product code calls: pause points (``pauses``) and the synthetic room with exact geometry."""
