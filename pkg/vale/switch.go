package vale

type Switch struct{}
