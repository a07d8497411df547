"""Mutation fuzzing of the image decode path: seeds, mutations, a contained runner, a campaign."""
