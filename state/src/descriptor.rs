use std::marker::PhantomData;

/// Names a single-value state and its type. Declare it as a `const` next to the
/// function that uses it.
///
/// ```
/// use tideline_state::ValueStateDescriptor;
/// const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");
/// assert_eq!(COUNT.name(), "count");
/// ```
#[derive(Debug)]
pub struct ValueStateDescriptor<V> {
    name: &'static str,
    _value: PhantomData<fn() -> V>,
}

/// Names a map state (per key and namespace, a map from `MK` to `MV`).
#[derive(Debug)]
pub struct MapStateDescriptor<MK, MV> {
    name: &'static str,
    _value: PhantomData<fn() -> (MK, MV)>,
}

/// Names a list state (per key and namespace, a list of `V`).
#[derive(Debug)]
pub struct ListStateDescriptor<V> {
    name: &'static str,
    _value: PhantomData<fn() -> V>,
}

macro_rules! descriptor_impl {
    ($ty:ident < $($p:ident),+ >) => {
        impl<$($p),+> $ty<$($p),+> {
            /// A descriptor for the state called `name`.
            pub const fn new(name: &'static str) -> Self {
                Self { name, _value: PhantomData }
            }

            /// The state's name, unique within one operator.
            pub const fn name(&self) -> &'static str {
                self.name
            }
        }
    };
}

descriptor_impl!(ValueStateDescriptor<V>);
descriptor_impl!(MapStateDescriptor<MK, MV>);
descriptor_impl!(ListStateDescriptor<V>);
