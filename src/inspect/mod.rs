//! Looking at a tape: the recorded graph as Graphviz DOT ([`Tape::to_dot`](crate::Tape::to_dot)).

mod dot;
