pub async fn find(&self, id: u64, trace: &str) -> Option<Row> {
    static __CACHEMACRO: ::cachemacro_runtime::__private_v0_1_0::EngineCell<
        Option<Row>,
        ::cachemacro_runtime::__private_v0_1_0::OptionKind,
    > = ::cachemacro_runtime::__private_v0_1_0::EngineCell::new(
        ::cachemacro_runtime::__private_v0_1_0::Policy::new(
            ::cachemacro_runtime::__private_v0_1_0::Site::new(
                ::core::module_path!(),
                "find",
                ::core::file!(),
                ::core::line!(),
                ::core::column!(),
            ),
            ::cachemacro_runtime::__private_v0_1_0::Duration::from_secs(300u64),
        ),
    );
    let __cachemacro_call = {
        let __cachemacro_e = __CACHEMACRO
            .get(|| {
                #[allow(unused_imports)]
                use ::cachemacro_runtime::__private_v0_1_0::{
                    ProbeNone as _, ProbeSized as _, ProbeSome as _, ProbeUnsized as _,
                    ShareErrors as _,
                };
                ::cachemacro_runtime::__private_v0_1_0::Hooks::new(
                        (&::cachemacro_runtime::__private_v0_1_0::ErrProbe::<
                            <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                                Option<Row>,
                            >>::Error,
                        >::new())
                            .sharing(),
                        (&::cachemacro_runtime::__private_v0_1_0::NoneProbe::<
                            <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                                Option<Row>,
                            >>::Value,
                        >::new())
                            .negative(),
                    )
                    .with_sizer(
                        (&::cachemacro_runtime::__private_v0_1_0::SizeProbe::<
                            <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                                Option<Row>,
                            >>::Value,
                        >::new())
                            .sizer(),
                    )
                    .with_packer({
                        #[allow(clippy::identity_op)]
                        fn __cachemacro_pack(
                            __cachemacro_s: &str,
                        ) -> ::cachemacro_runtime::__private_v0_1_0::Option<[u64; 2]> {
                            let mut __cachemacro_p = ::cachemacro_runtime::__private_v0_1_0::KeyParse::new(
                                __cachemacro_s,
                                {
                                    const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                                        b"%:",
                                    );
                                    SET
                                },
                            );
                            __cachemacro_p
                                .lit(
                                    ::core::concat!(::core::module_path!(), "::", "find"),
                                )?;
                            __cachemacro_p.lit(":")?;
                            let id: u64 = __cachemacro_p.int()?;
                            __cachemacro_p.end()?;
                            ::cachemacro_runtime::__private_v0_1_0::Some({
                                const _: () = ::core::assert!(
                                    0u32 + < u64 as
                                    ::cachemacro_runtime::__private_v0_1_0::KeyInt > ::BITS <=
                                    128,
                                    "the key's integers are wider than 128 bits: a type alias named like a primitive integer type?"
                                );
                                ::cachemacro_runtime::__private_v0_1_0::pack(
                                    0u128
                                        | (::cachemacro_runtime::__private_v0_1_0::KeyInt::bits(id)
                                            << (0u32)),
                                )
                            })
                        }
                        __cachemacro_pack
                    })
            });
        match __cachemacro_e
            .first(
                ::cachemacro_runtime::__private_v0_1_0::Probe::Packed({
                    const _: () = ::core::assert!(
                        0u32 + < u64 as ::cachemacro_runtime::__private_v0_1_0::KeyInt >
                        ::BITS <= 128,
                        "the key's integers are wider than 128 bits: a type alias named like a primitive integer type?"
                    );
                    ::cachemacro_runtime::__private_v0_1_0::pack(
                        0u128
                            | (::cachemacro_runtime::__private_v0_1_0::KeyInt::bits(id)
                                << (0u32)),
                    )
                }),
            )
        {
            ::cachemacro_runtime::__private_v0_1_0::Ok(__cachemacro_v) => {
                ::cachemacro_runtime::__private_v0_1_0::Call::Ready(
                    ::cachemacro_runtime::__private_v0_1_0::ready(__cachemacro_v),
                )
            }
            ::cachemacro_runtime::__private_v0_1_0::Err(__cachemacro_past) => {
                #[allow(unused_imports)]
                use ::cachemacro_runtime::__private_v0_1_0::{
                    DirectKind as _, DisplayKind as _,
                };
                let mut __k = ::cachemacro_runtime::__private_v0_1_0::KeyBuilder::new(
                    57usize,
                    {
                        const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                            b"%:",
                        );
                        SET
                    },
                );
                __k.lit(::core::concat!(::core::module_path!(), "::", "find"));
                __k.lit(":");
                {
                    let __v = &id;
                    (&::cachemacro_runtime::__private_v0_1_0::Arg(__v))
                        .kind()
                        .render(&mut __k, __v);
                }
                __cachemacro_e
                    .get_past(
                        __cachemacro_past,
                        ::cachemacro_runtime::__private_v0_1_0::Key::from(__k.finish()),
                        move || (
                            ::cachemacro_runtime::__private_v0_1_0::Vec::new(),
                            async move {
                                #[allow(
                                    unreachable_code,
                                    clippy::diverging_sub_expression,
                                    clippy::empty_loop,
                                    clippy::let_unit_value,
                                    clippy::needless_return
                                )]
                                if false {
                                    let __cachemacro_fake_return: Option<Row> = loop {};
                                    return __cachemacro_fake_return;
                                }
                                self.db.find(id).await
                            },
                        ),
                    )
            }
        }
    };
    __cachemacro_call.await
}
///Removes the cached value of [`find`] for these arguments from every tier; a load in flight for it will not write it back.
#[allow(unused_variables, unused_mut, clippy::needless_pass_by_value)]
pub async fn find_invalidate(
    &self,
    id: u64,
    trace: &str,
) -> ::cachemacro_runtime::__private_v0_1_0::Result<(), ::cachemacro_runtime::Error> {
    static __CACHEMACRO: ::cachemacro_runtime::__private_v0_1_0::EngineCell<
        Option<Row>,
        ::cachemacro_runtime::__private_v0_1_0::OptionKind,
    > = ::cachemacro_runtime::__private_v0_1_0::EngineCell::new(
        ::cachemacro_runtime::__private_v0_1_0::Policy::new(
            ::cachemacro_runtime::__private_v0_1_0::Site::new(
                ::core::module_path!(),
                "find",
                ::core::file!(),
                ::core::line!(),
                ::core::column!(),
            ),
            ::cachemacro_runtime::__private_v0_1_0::Duration::from_secs(300u64),
        ),
    );
    let __cachemacro_key = {
        #[allow(unused_imports)]
        use ::cachemacro_runtime::__private_v0_1_0::{DirectKind as _, DisplayKind as _};
        let mut __k = ::cachemacro_runtime::__private_v0_1_0::KeyBuilder::new(
            57usize,
            {
                const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                    b"%:",
                );
                SET
            },
        );
        __k.lit(::core::concat!(::core::module_path!(), "::", "find"));
        __k.lit(":");
        {
            let __v = &id;
            (&::cachemacro_runtime::__private_v0_1_0::Arg(__v))
                .kind()
                .render(&mut __k, __v);
        }
        __k.finish()
    };
    __CACHEMACRO
        .get(|| {
            #[allow(unused_imports)]
            use ::cachemacro_runtime::__private_v0_1_0::{
                ProbeNone as _, ProbeSized as _, ProbeSome as _, ProbeUnsized as _,
                ShareErrors as _,
            };
            ::cachemacro_runtime::__private_v0_1_0::Hooks::new(
                    (&::cachemacro_runtime::__private_v0_1_0::ErrProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Error,
                    >::new())
                        .sharing(),
                    (&::cachemacro_runtime::__private_v0_1_0::NoneProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .negative(),
                )
                .with_sizer(
                    (&::cachemacro_runtime::__private_v0_1_0::SizeProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .sizer(),
                )
                .with_packer({
                    #[allow(clippy::identity_op)]
                    fn __cachemacro_pack(
                        __cachemacro_s: &str,
                    ) -> ::cachemacro_runtime::__private_v0_1_0::Option<[u64; 2]> {
                        let mut __cachemacro_p = ::cachemacro_runtime::__private_v0_1_0::KeyParse::new(
                            __cachemacro_s,
                            {
                                const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                                    b"%:",
                                );
                                SET
                            },
                        );
                        __cachemacro_p
                            .lit(::core::concat!(::core::module_path!(), "::", "find"))?;
                        __cachemacro_p.lit(":")?;
                        let id: u64 = __cachemacro_p.int()?;
                        __cachemacro_p.end()?;
                        ::cachemacro_runtime::__private_v0_1_0::Some({
                            const _: () = ::core::assert!(
                                0u32 + < u64 as
                                ::cachemacro_runtime::__private_v0_1_0::KeyInt > ::BITS <=
                                128,
                                "the key's integers are wider than 128 bits: a type alias named like a primitive integer type?"
                            );
                            ::cachemacro_runtime::__private_v0_1_0::pack(
                                0u128
                                    | (::cachemacro_runtime::__private_v0_1_0::KeyInt::bits(id)
                                        << (0u32)),
                            )
                        })
                    }
                    __cachemacro_pack
                })
        })
        .invalidate(::cachemacro_runtime::__private_v0_1_0::Key::from(__cachemacro_key))
        .await
}
///Calls the source of [`find`] now and stores its result (a write-through put).
#[allow(unused_variables, unused_mut, clippy::needless_pass_by_value)]
pub async fn find_refresh(&self, id: u64, trace: &str) -> Option<Row> {
    static __CACHEMACRO: ::cachemacro_runtime::__private_v0_1_0::EngineCell<
        Option<Row>,
        ::cachemacro_runtime::__private_v0_1_0::OptionKind,
    > = ::cachemacro_runtime::__private_v0_1_0::EngineCell::new(
        ::cachemacro_runtime::__private_v0_1_0::Policy::new(
            ::cachemacro_runtime::__private_v0_1_0::Site::new(
                ::core::module_path!(),
                "find",
                ::core::file!(),
                ::core::line!(),
                ::core::column!(),
            ),
            ::cachemacro_runtime::__private_v0_1_0::Duration::from_secs(300u64),
        ),
    );
    let __cachemacro_key = {
        #[allow(unused_imports)]
        use ::cachemacro_runtime::__private_v0_1_0::{DirectKind as _, DisplayKind as _};
        let mut __k = ::cachemacro_runtime::__private_v0_1_0::KeyBuilder::new(
            57usize,
            {
                const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                    b"%:",
                );
                SET
            },
        );
        __k.lit(::core::concat!(::core::module_path!(), "::", "find"));
        __k.lit(":");
        {
            let __v = &id;
            (&::cachemacro_runtime::__private_v0_1_0::Arg(__v))
                .kind()
                .render(&mut __k, __v);
        }
        __k.finish()
    };
    let __cachemacro_tags = ::cachemacro_runtime::__private_v0_1_0::Vec::new();
    __CACHEMACRO
        .get(|| {
            #[allow(unused_imports)]
            use ::cachemacro_runtime::__private_v0_1_0::{
                ProbeNone as _, ProbeSized as _, ProbeSome as _, ProbeUnsized as _,
                ShareErrors as _,
            };
            ::cachemacro_runtime::__private_v0_1_0::Hooks::new(
                    (&::cachemacro_runtime::__private_v0_1_0::ErrProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Error,
                    >::new())
                        .sharing(),
                    (&::cachemacro_runtime::__private_v0_1_0::NoneProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .negative(),
                )
                .with_sizer(
                    (&::cachemacro_runtime::__private_v0_1_0::SizeProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .sizer(),
                )
                .with_packer({
                    #[allow(clippy::identity_op)]
                    fn __cachemacro_pack(
                        __cachemacro_s: &str,
                    ) -> ::cachemacro_runtime::__private_v0_1_0::Option<[u64; 2]> {
                        let mut __cachemacro_p = ::cachemacro_runtime::__private_v0_1_0::KeyParse::new(
                            __cachemacro_s,
                            {
                                const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                                    b"%:",
                                );
                                SET
                            },
                        );
                        __cachemacro_p
                            .lit(::core::concat!(::core::module_path!(), "::", "find"))?;
                        __cachemacro_p.lit(":")?;
                        let id: u64 = __cachemacro_p.int()?;
                        __cachemacro_p.end()?;
                        ::cachemacro_runtime::__private_v0_1_0::Some({
                            const _: () = ::core::assert!(
                                0u32 + < u64 as
                                ::cachemacro_runtime::__private_v0_1_0::KeyInt > ::BITS <=
                                128,
                                "the key's integers are wider than 128 bits: a type alias named like a primitive integer type?"
                            );
                            ::cachemacro_runtime::__private_v0_1_0::pack(
                                0u128
                                    | (::cachemacro_runtime::__private_v0_1_0::KeyInt::bits(id)
                                        << (0u32)),
                            )
                        })
                    }
                    __cachemacro_pack
                })
        })
        .refresh(
            ::cachemacro_runtime::__private_v0_1_0::Key::from(__cachemacro_key),
            __cachemacro_tags,
            async move {
                #[allow(
                    unreachable_code,
                    clippy::diverging_sub_expression,
                    clippy::empty_loop,
                    clippy::let_unit_value,
                    clippy::needless_return
                )]
                if false {
                    let __cachemacro_fake_return: Option<Row> = loop {};
                    return __cachemacro_fake_return;
                }
                self.db.find(id).await
            },
        )
        .await
}
///Stores `value` as [`find`]'s value for these arguments in every tier (a write-through put): other processes drop their L1 copy, loads in flight do not overwrite it. If a tier cannot take it, the key is invalidated instead and the error returned.
#[allow(unused_variables, unused_mut, clippy::needless_pass_by_value)]
pub async fn find_put(
    &self,
    id: u64,
    trace: &str,
    value: <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
        Option<Row>,
    >>::Value,
) -> ::cachemacro_runtime::__private_v0_1_0::Result<(), ::cachemacro_runtime::Error> {
    static __CACHEMACRO: ::cachemacro_runtime::__private_v0_1_0::EngineCell<
        Option<Row>,
        ::cachemacro_runtime::__private_v0_1_0::OptionKind,
    > = ::cachemacro_runtime::__private_v0_1_0::EngineCell::new(
        ::cachemacro_runtime::__private_v0_1_0::Policy::new(
            ::cachemacro_runtime::__private_v0_1_0::Site::new(
                ::core::module_path!(),
                "find",
                ::core::file!(),
                ::core::line!(),
                ::core::column!(),
            ),
            ::cachemacro_runtime::__private_v0_1_0::Duration::from_secs(300u64),
        ),
    );
    let __cachemacro_key = {
        #[allow(unused_imports)]
        use ::cachemacro_runtime::__private_v0_1_0::{DirectKind as _, DisplayKind as _};
        let mut __k = ::cachemacro_runtime::__private_v0_1_0::KeyBuilder::new(
            57usize,
            {
                const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                    b"%:",
                );
                SET
            },
        );
        __k.lit(::core::concat!(::core::module_path!(), "::", "find"));
        __k.lit(":");
        {
            let __v = &id;
            (&::cachemacro_runtime::__private_v0_1_0::Arg(__v))
                .kind()
                .render(&mut __k, __v);
        }
        __k.finish()
    };
    let __cachemacro_tags = ::cachemacro_runtime::__private_v0_1_0::Vec::new();
    __CACHEMACRO
        .get(|| {
            #[allow(unused_imports)]
            use ::cachemacro_runtime::__private_v0_1_0::{
                ProbeNone as _, ProbeSized as _, ProbeSome as _, ProbeUnsized as _,
                ShareErrors as _,
            };
            ::cachemacro_runtime::__private_v0_1_0::Hooks::new(
                    (&::cachemacro_runtime::__private_v0_1_0::ErrProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Error,
                    >::new())
                        .sharing(),
                    (&::cachemacro_runtime::__private_v0_1_0::NoneProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .negative(),
                )
                .with_sizer(
                    (&::cachemacro_runtime::__private_v0_1_0::SizeProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .sizer(),
                )
                .with_packer({
                    #[allow(clippy::identity_op)]
                    fn __cachemacro_pack(
                        __cachemacro_s: &str,
                    ) -> ::cachemacro_runtime::__private_v0_1_0::Option<[u64; 2]> {
                        let mut __cachemacro_p = ::cachemacro_runtime::__private_v0_1_0::KeyParse::new(
                            __cachemacro_s,
                            {
                                const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                                    b"%:",
                                );
                                SET
                            },
                        );
                        __cachemacro_p
                            .lit(::core::concat!(::core::module_path!(), "::", "find"))?;
                        __cachemacro_p.lit(":")?;
                        let id: u64 = __cachemacro_p.int()?;
                        __cachemacro_p.end()?;
                        ::cachemacro_runtime::__private_v0_1_0::Some({
                            const _: () = ::core::assert!(
                                0u32 + < u64 as
                                ::cachemacro_runtime::__private_v0_1_0::KeyInt > ::BITS <=
                                128,
                                "the key's integers are wider than 128 bits: a type alias named like a primitive integer type?"
                            );
                            ::cachemacro_runtime::__private_v0_1_0::pack(
                                0u128
                                    | (::cachemacro_runtime::__private_v0_1_0::KeyInt::bits(id)
                                        << (0u32)),
                            )
                        })
                    }
                    __cachemacro_pack
                })
        })
        .put(
            ::cachemacro_runtime::__private_v0_1_0::Key::from(__cachemacro_key),
            __cachemacro_tags,
            value,
        )
        .await
}
///Counters and latency of [`find`]'s cache.
pub fn find_stats() -> ::cachemacro_runtime::Stats {
    static __CACHEMACRO: ::cachemacro_runtime::__private_v0_1_0::EngineCell<
        Option<Row>,
        ::cachemacro_runtime::__private_v0_1_0::OptionKind,
    > = ::cachemacro_runtime::__private_v0_1_0::EngineCell::new(
        ::cachemacro_runtime::__private_v0_1_0::Policy::new(
            ::cachemacro_runtime::__private_v0_1_0::Site::new(
                ::core::module_path!(),
                "find",
                ::core::file!(),
                ::core::line!(),
                ::core::column!(),
            ),
            ::cachemacro_runtime::__private_v0_1_0::Duration::from_secs(300u64),
        ),
    );
    __CACHEMACRO
        .get(|| {
            #[allow(unused_imports)]
            use ::cachemacro_runtime::__private_v0_1_0::{
                ProbeNone as _, ProbeSized as _, ProbeSome as _, ProbeUnsized as _,
                ShareErrors as _,
            };
            ::cachemacro_runtime::__private_v0_1_0::Hooks::new(
                    (&::cachemacro_runtime::__private_v0_1_0::ErrProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Error,
                    >::new())
                        .sharing(),
                    (&::cachemacro_runtime::__private_v0_1_0::NoneProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .negative(),
                )
                .with_sizer(
                    (&::cachemacro_runtime::__private_v0_1_0::SizeProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .sizer(),
                )
                .with_packer({
                    #[allow(clippy::identity_op)]
                    fn __cachemacro_pack(
                        __cachemacro_s: &str,
                    ) -> ::cachemacro_runtime::__private_v0_1_0::Option<[u64; 2]> {
                        let mut __cachemacro_p = ::cachemacro_runtime::__private_v0_1_0::KeyParse::new(
                            __cachemacro_s,
                            {
                                const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                                    b"%:",
                                );
                                SET
                            },
                        );
                        __cachemacro_p
                            .lit(::core::concat!(::core::module_path!(), "::", "find"))?;
                        __cachemacro_p.lit(":")?;
                        let id: u64 = __cachemacro_p.int()?;
                        __cachemacro_p.end()?;
                        ::cachemacro_runtime::__private_v0_1_0::Some({
                            const _: () = ::core::assert!(
                                0u32 + < u64 as
                                ::cachemacro_runtime::__private_v0_1_0::KeyInt > ::BITS <=
                                128,
                                "the key's integers are wider than 128 bits: a type alias named like a primitive integer type?"
                            );
                            ::cachemacro_runtime::__private_v0_1_0::pack(
                                0u128
                                    | (::cachemacro_runtime::__private_v0_1_0::KeyInt::bits(id)
                                        << (0u32)),
                            )
                        })
                    }
                    __cachemacro_pack
                })
        })
        .stats()
}
///Drops every cached value of [`find`], for all arguments, from every tier and (tiered) every process's in-process tier, without scanning keys; loads in flight do not write back. If the shared tier cannot be reached, the error is returned and the clear is replayed when it answers.
pub async fn find_clear() -> ::cachemacro_runtime::__private_v0_1_0::Result<
    (),
    ::cachemacro_runtime::Error,
> {
    static __CACHEMACRO: ::cachemacro_runtime::__private_v0_1_0::EngineCell<
        Option<Row>,
        ::cachemacro_runtime::__private_v0_1_0::OptionKind,
    > = ::cachemacro_runtime::__private_v0_1_0::EngineCell::new(
        ::cachemacro_runtime::__private_v0_1_0::Policy::new(
            ::cachemacro_runtime::__private_v0_1_0::Site::new(
                ::core::module_path!(),
                "find",
                ::core::file!(),
                ::core::line!(),
                ::core::column!(),
            ),
            ::cachemacro_runtime::__private_v0_1_0::Duration::from_secs(300u64),
        ),
    );
    __CACHEMACRO
        .get(|| {
            #[allow(unused_imports)]
            use ::cachemacro_runtime::__private_v0_1_0::{
                ProbeNone as _, ProbeSized as _, ProbeSome as _, ProbeUnsized as _,
                ShareErrors as _,
            };
            ::cachemacro_runtime::__private_v0_1_0::Hooks::new(
                    (&::cachemacro_runtime::__private_v0_1_0::ErrProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Error,
                    >::new())
                        .sharing(),
                    (&::cachemacro_runtime::__private_v0_1_0::NoneProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .negative(),
                )
                .with_sizer(
                    (&::cachemacro_runtime::__private_v0_1_0::SizeProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .sizer(),
                )
                .with_packer({
                    #[allow(clippy::identity_op)]
                    fn __cachemacro_pack(
                        __cachemacro_s: &str,
                    ) -> ::cachemacro_runtime::__private_v0_1_0::Option<[u64; 2]> {
                        let mut __cachemacro_p = ::cachemacro_runtime::__private_v0_1_0::KeyParse::new(
                            __cachemacro_s,
                            {
                                const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                                    b"%:",
                                );
                                SET
                            },
                        );
                        __cachemacro_p
                            .lit(::core::concat!(::core::module_path!(), "::", "find"))?;
                        __cachemacro_p.lit(":")?;
                        let id: u64 = __cachemacro_p.int()?;
                        __cachemacro_p.end()?;
                        ::cachemacro_runtime::__private_v0_1_0::Some({
                            const _: () = ::core::assert!(
                                0u32 + < u64 as
                                ::cachemacro_runtime::__private_v0_1_0::KeyInt > ::BITS <=
                                128,
                                "the key's integers are wider than 128 bits: a type alias named like a primitive integer type?"
                            );
                            ::cachemacro_runtime::__private_v0_1_0::pack(
                                0u128
                                    | (::cachemacro_runtime::__private_v0_1_0::KeyInt::bits(id)
                                        << (0u32)),
                            )
                        })
                    }
                    __cachemacro_pack
                })
        })
        .clear()
        .await
}
///Calls [`find`] once per item of `args` (its key arguments), and returns the results in the same order. The keys the in-process tier cannot answer are read from the shared tier in one round trip (one `MGET`, split by slot on a cluster); the rest are loaded concurrently, each coalesced with other callers as usual.
#[allow(unused_variables, unused_mut, clippy::needless_pass_by_value)]
pub async fn find_many(
    &self,
    trace: &str,
    args: impl ::core::iter::IntoIterator<Item = u64>,
) -> ::cachemacro_runtime::__private_v0_1_0::Vec<Option<Row>> {
    static __CACHEMACRO: ::cachemacro_runtime::__private_v0_1_0::EngineCell<
        Option<Row>,
        ::cachemacro_runtime::__private_v0_1_0::OptionKind,
    > = ::cachemacro_runtime::__private_v0_1_0::EngineCell::new(
        ::cachemacro_runtime::__private_v0_1_0::Policy::new(
            ::cachemacro_runtime::__private_v0_1_0::Site::new(
                ::core::module_path!(),
                "find",
                ::core::file!(),
                ::core::line!(),
                ::core::column!(),
            ),
            ::cachemacro_runtime::__private_v0_1_0::Duration::from_secs(300u64),
        ),
    );
    let __cachemacro_items: ::cachemacro_runtime::__private_v0_1_0::Vec<_> = ::core::iter::IntoIterator::into_iter(
            args,
        )
        .map(|__cachemacro_item| {
            let id: u64 = __cachemacro_item;
            (
                {
                    #[allow(unused_imports)]
                    use ::cachemacro_runtime::__private_v0_1_0::{
                        DirectKind as _, DisplayKind as _,
                    };
                    let mut __k = ::cachemacro_runtime::__private_v0_1_0::KeyBuilder::new(
                        57usize,
                        {
                            const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                                b"%:",
                            );
                            SET
                        },
                    );
                    __k.lit(::core::concat!(::core::module_path!(), "::", "find"));
                    __k.lit(":");
                    {
                        let __v = &id;
                        (&::cachemacro_runtime::__private_v0_1_0::Arg(__v))
                            .kind()
                            .render(&mut __k, __v);
                    }
                    __k.finish()
                },
                ::cachemacro_runtime::__private_v0_1_0::Vec::new(),
                move || (
                    ::cachemacro_runtime::__private_v0_1_0::Vec::new(),
                    async move {
                        #[allow(
                            unreachable_code,
                            clippy::diverging_sub_expression,
                            clippy::empty_loop,
                            clippy::let_unit_value,
                            clippy::needless_return
                        )]
                        if false {
                            let __cachemacro_fake_return: Option<Row> = loop {};
                            return __cachemacro_fake_return;
                        }
                        self.db.find(id).await
                    },
                ),
            )
        })
        .collect();
    __CACHEMACRO
        .get(|| {
            #[allow(unused_imports)]
            use ::cachemacro_runtime::__private_v0_1_0::{
                ProbeNone as _, ProbeSized as _, ProbeSome as _, ProbeUnsized as _,
                ShareErrors as _,
            };
            ::cachemacro_runtime::__private_v0_1_0::Hooks::new(
                    (&::cachemacro_runtime::__private_v0_1_0::ErrProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Error,
                    >::new())
                        .sharing(),
                    (&::cachemacro_runtime::__private_v0_1_0::NoneProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .negative(),
                )
                .with_sizer(
                    (&::cachemacro_runtime::__private_v0_1_0::SizeProbe::<
                        <::cachemacro_runtime::__private_v0_1_0::OptionKind as ::cachemacro_runtime::__private_v0_1_0::Kind<
                            Option<Row>,
                        >>::Value,
                    >::new())
                        .sizer(),
                )
                .with_packer({
                    #[allow(clippy::identity_op)]
                    fn __cachemacro_pack(
                        __cachemacro_s: &str,
                    ) -> ::cachemacro_runtime::__private_v0_1_0::Option<[u64; 2]> {
                        let mut __cachemacro_p = ::cachemacro_runtime::__private_v0_1_0::KeyParse::new(
                            __cachemacro_s,
                            {
                                const SET: u128 = ::cachemacro_runtime::__private_v0_1_0::escape_set(
                                    b"%:",
                                );
                                SET
                            },
                        );
                        __cachemacro_p
                            .lit(::core::concat!(::core::module_path!(), "::", "find"))?;
                        __cachemacro_p.lit(":")?;
                        let id: u64 = __cachemacro_p.int()?;
                        __cachemacro_p.end()?;
                        ::cachemacro_runtime::__private_v0_1_0::Some({
                            const _: () = ::core::assert!(
                                0u32 + < u64 as
                                ::cachemacro_runtime::__private_v0_1_0::KeyInt > ::BITS <=
                                128,
                                "the key's integers are wider than 128 bits: a type alias named like a primitive integer type?"
                            );
                            ::cachemacro_runtime::__private_v0_1_0::pack(
                                0u128
                                    | (::cachemacro_runtime::__private_v0_1_0::KeyInt::bits(id)
                                        << (0u32)),
                            )
                        })
                    }
                    __cachemacro_pack
                })
        })
        .get_many(__cachemacro_items, |__e, __k, __m| __e.get(__k, __m), |_, _, _| {})
        .await
}
