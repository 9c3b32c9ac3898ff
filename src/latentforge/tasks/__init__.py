"""What users do with a trained model: generate, reconstruct, embed, score, recommend."""
