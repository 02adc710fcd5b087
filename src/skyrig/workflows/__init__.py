"""Operations that chain several layers: up, down, doctor."""
